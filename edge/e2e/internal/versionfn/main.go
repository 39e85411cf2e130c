// Command versionfn is the end-to-end test's function: an aws-lambda-go
// function, unmodified Lambda code, that answers with its version (from
// the Lambda environment) and exits at start when CRASH is set in its
// manifest's environment. GREETING, when set, is written to its standard
// error at start (a log line of the function's).
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

func main() {
	if os.Getenv("CRASH") != "" {
		os.Exit(3)
	}
	if g := os.Getenv("GREETING"); g != "" {
		fmt.Fprintln(os.Stderr, g)
	}
	lambda.Start(func(ctx context.Context, event map[string]any) (map[string]any, error) {
		lc, _ := lambdacontext.FromContext(ctx)
		return map[string]any{"version": lambdacontext.FunctionVersion, "request": lc.AwsRequestID, "event": event}, nil
	})
}
