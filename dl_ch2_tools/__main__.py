from dl_ch2_tools.cli import main

raise SystemExit(main())
