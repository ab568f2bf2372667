"""autogen: Python bindings generated from pinned vendor headers, and the runtime they use.

Generated modules (autogen/linux/, autogen/amd/) import only `autogen.runtime` (structs) or
`autogen.regs` (registers); libclang is needed only to regenerate them (`python -m autogen`).
See docs/autogen.md.
"""


class GenerationError(Exception):
    """A target could not be generated (its headers failed to parse, or its generator refused them)."""
