"""The `vm` benchmark: registered with tools.bench, prints its figures, and its entry counts meet
the target of at most one page-table entry per 2 MiB of aligned range (counts, not timings)."""
from __future__ import annotations

import json

from drivers.vm import bench as vm_bench
from tools import bench


def test_vm_benchmark_counts_at_most_one_entry_per_2mib_of_aligned_range():
    figures = vm_bench.run(repeats=1)
    for size in vm_bench.SIZES_GIB:
        for what in ("map", "unmap"):
            assert figures[f"{size}gib_{what}_entries_changed_per_2mib"] <= 1
            assert figures[f"{size}gib_{what}_write_calls"] <= 2
            assert f"{size}gib_{what}_seconds" in figures
    # without huge pages 1 GiB needs a PTE per 4 KiB page, plus the directories above them
    assert figures["1gib_4k_pages_map_entries_changed"] == (1 << 18) + 512 + 2


def test_tools_bench_runs_vm_as_json(capsys):
    assert bench.main(["--json", "vm"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [result["name"] for result in results] == ["vm"]
    assert results[0]["figures"]["64gib_map_entries_changed"] == 65
