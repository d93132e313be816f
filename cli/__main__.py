from container.cli.app import main

main()
