"""The HCQ compute layer."""
