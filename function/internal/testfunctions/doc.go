// Package testfunctions holds the functions the function host's tests
// build and run as real processes: lambda (on github.com/aws/aws-lambda-go,
// unmodified lambda.Start) and fc (a Function Compute runtime client).
package testfunctions
