from olv.cli import main

main()
