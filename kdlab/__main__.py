from kdlab.cli import main

main()
