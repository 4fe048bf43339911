"""Amanah: onion."""
