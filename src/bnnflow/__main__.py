from bnnflow.cli import main

raise SystemExit(main())
