"""x86 architecture code (arch/x86/)."""
