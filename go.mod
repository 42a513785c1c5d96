module github.com/bastion-ssh/bastion

go 1.26.0

require (
	github.com/creack/pty v1.1.24 // indirect
	go.uber.org/goleak v1.3.0 // indirect
	golang.org/x/crypto v0.59.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)
