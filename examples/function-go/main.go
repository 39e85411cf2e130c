// Command function-go is an edge function written for AWS Lambda with
// github.com/aws/aws-lambda-go, unchanged: it runs on an edgekit gateway
// through the Lambda runtime API. Build it next to its manifest:
//
//	go build -o examples/function-go/bootstrap ./examples/function-go
//
// and deploy the directory (function.json names "bootstrap" as the handler).
package main

import (
	"context"
	"fmt"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

// Reading is a temperature sample from a device.
type Reading struct {
	Device      string  `json:"device"`
	Temperature float64 `json:"temperature"`
}

// Verdict says whether the reading needs attention.
type Verdict struct {
	Device    string  `json:"device"`
	Alarm     bool    `json:"alarm"`
	Threshold float64 `json:"threshold"`
	RequestID string  `json:"requestId"`
}

func handle(ctx context.Context, r Reading) (Verdict, error) {
	if r.Device == "" {
		return Verdict{}, fmt.Errorf("reading without a device")
	}
	lc, _ := lambdacontext.FromContext(ctx)
	const threshold = 80
	return Verdict{Device: r.Device, Alarm: r.Temperature > threshold, Threshold: threshold, RequestID: lc.AwsRequestID}, nil
}

func main() { lambda.Start(handle) }
