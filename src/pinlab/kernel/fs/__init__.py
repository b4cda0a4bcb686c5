"""The model of the kernel's fs/ directory."""
