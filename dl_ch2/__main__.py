from dl_ch2.tools.cli import main

raise SystemExit(main())
