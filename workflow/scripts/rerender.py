"""Re-render every figure and table of an unpacked bundle and compare the bytes.

The bundle carries its own copy as guestio-bundle/rerender.py (``python3 rerender.py`` there);
this is the same program, for a bundle unpacked elsewhere:
``python3 workflow/scripts/rerender.py --bundle DIR``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from guestio.report.rerender import main  # noqa: E402

sys.exit(main())
