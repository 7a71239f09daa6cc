"""Two runs side by side: ``python workflow/scripts/compare.py A B --out DIR``.

The same as ``.venv/bin/python -m guestio.report.compare`` (see docs/compare.md); this file only
puts workflow/ on the path for an interpreter without guestio on it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from guestio.report.compare import main  # noqa: E402

sys.exit(main())
