"""The relay's two HTTP faces: `source` (pages and uploads, for sources, no JavaScript
needed) and `journalist` (the JSON API for contacts). Each is its own aiohttp app on its
own port; the journalist API is simply not routed on the source port."""
