"""x86 memory management (arch/x86/mm/)."""
