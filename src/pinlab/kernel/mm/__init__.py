"""The model of the kernel's mm/ directory."""
