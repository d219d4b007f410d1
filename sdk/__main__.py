from anytune._cli.main import main

main()
