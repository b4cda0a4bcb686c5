"""The model of the kernel's io_uring/ directory: rings and registered (fixed) buffers (v6.1)."""
