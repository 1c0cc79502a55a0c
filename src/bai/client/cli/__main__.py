from bai.client.cli.main import main

main()
