from platforge.cli.main import main

main()
