"""Amanah's clients: `amanah-inbox` for contacts, `amanah-drop` for sources. They use
`crypto` (and later `onion`); of the relay, only its sanitizer."""
