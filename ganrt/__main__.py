from ganrt.cli import main

main()
