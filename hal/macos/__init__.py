"""macOS: a GPU in a Thunderbolt enclosure reached through the TinyGPU app's socket (`tinygpu:`).

`hal.macos.tinygpu` finds (or starts) the app's server socket and opens the device with the
protocol client of hal.remote; `hal.macos.ioreg` lists the PCI GPUs IOKit sees from `ioreg`'s
XML output. Both import on every platform; on anything but macOS opening a `tinygpu:` device
raises BackendUnavailable naming the platform.
"""
