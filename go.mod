module github.com/edgekit/edgekit

go 1.26

require go.uber.org/goleak v1.3.0

require github.com/aws/aws-lambda-go v1.55.1

require golang.org/x/sys v0.35.0

require (
	github.com/eclipse/paho.golang v0.23.0
	github.com/gorilla/websocket v1.5.3 // indirect
	golang.org/x/net v0.43.0 // indirect
)
