from llama_box_server.cli import main

main()
