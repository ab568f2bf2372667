"""Generated AMD bindings from linux-source-6.12: firmware, discovery, MQD, PM4/SDMA packet and SMU
modules here (autogen.amd.<header>), registers per IP block and version in autogen.amd.regs.

Regenerate with `python -m autogen amd`; see docs/autogen.md.
"""
