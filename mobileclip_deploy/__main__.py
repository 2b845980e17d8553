from mobileclip_deploy.cli import main

main()
