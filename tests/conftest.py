"""Suite-wide settings. Hypothesis runs more examples under CI (CI=true) than locally."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("dev", max_examples=300)
settings.register_profile("ci", max_examples=1000)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")
