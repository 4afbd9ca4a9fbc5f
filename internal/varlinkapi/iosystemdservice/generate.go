package iosystemdservice

//go:generate go run github.com/varlink/go/cmd/varlink-go-interface-generator io.systemd.service.varlink
