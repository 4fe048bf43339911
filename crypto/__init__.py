"""Amanah's cryptography, sans-I/O: the age v1 format on PyNaCl, key encodings, member
cards, the signed contact directory, and codenames. Bytes in, bytes out; nothing here
opens a file or a socket. See `crypto.errors` for every error it raises."""
