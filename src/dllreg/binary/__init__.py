"""Readers for native binary formats (ELF now; PE and Mach-O later)."""
