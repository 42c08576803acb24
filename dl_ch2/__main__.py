from dl_ch2.cli import main

raise SystemExit(main())
