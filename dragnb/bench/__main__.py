"""``python -m dragnb.bench --child JSON``: one child-process measurement (:func:`dragnb.bench.children.main`)."""

import sys

from .children import main

sys.exit(main())
