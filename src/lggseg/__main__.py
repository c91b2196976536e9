from lggseg.commands.cli import main

main()
