from lggseg.cli import main

main()
