// Command bastion is the SSH bastion server.
//
//	bastion dev            run on a laptop: local backend, dev directory
//	bastion serve          run from a config file (production)
//	bastion check-config   validate a config file and its host keys
//	bastion version        print the version
//
// main owns flags, config loading, logging setup and signals; everything
// else lives in packages.
package main
