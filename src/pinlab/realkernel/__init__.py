"""The real-kernel referee: boot a Linux kernel under QEMU, run the probes, compare."""
