from memberflow.cli import main

main()
