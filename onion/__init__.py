"""Amanah: onion. Tor through stem (the only package that imports it): launching or
attaching to tor, onion services with persisted keys, client authorisation, proof-of-work,
rotation (`keys`, `tor`, `services`, `keeper`), address derivation (`address`), and the
clients' side: SOCKS and client-auth keys (`client`). Errors: `onion.errors`."""
