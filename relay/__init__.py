"""Amanah: relay."""
