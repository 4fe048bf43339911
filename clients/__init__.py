"""Amanah: clients."""
