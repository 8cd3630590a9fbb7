from llama_box.server.cli import main

main()
