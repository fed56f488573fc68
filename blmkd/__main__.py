from blmkd.cli import main

main()
