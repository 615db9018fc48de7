"""``python -m metaembed_rag.cli``."""

from . import main

raise SystemExit(main())
