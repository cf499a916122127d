from linfilt.cli import main

raise SystemExit(main())
