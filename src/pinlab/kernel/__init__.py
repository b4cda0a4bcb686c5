"""The model of the Linux kernel's memory management, laid out like the kernel tree."""
