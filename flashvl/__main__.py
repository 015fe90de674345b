from flashvl.cli import main

raise SystemExit(main())
