from edlib.cli import main

raise SystemExit(main())
