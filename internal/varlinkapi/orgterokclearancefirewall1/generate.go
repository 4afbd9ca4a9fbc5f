package orgterokclearancefirewall1

//go:generate go run github.com/varlink/go/cmd/varlink-go-interface-generator org.terok.ClearanceFirewall1.varlink
