from __future__ import annotations

import sys
from pathlib import Path

# The tests' own helpers (wire.py, haproxy_peer.py) import as top-level modules.
sys.path.insert(0, str(Path(__file__).parent))
