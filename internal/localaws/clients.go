package localaws

import (
	"context"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
)

// AWSConfig returns a config with the region, the static credentials and an
// HTTP client shared by every client of these servers, and no endpoint. It
// is built by hand because config.LoadDefaultConfig reads the environment
// (AWS_CA_BUNDLE on some machines makes it reject custom HTTP clients).
func (s *Servers) AWSConfig() aws.Config {
	return aws.Config{
		Region:      s.Region,
		Credentials: staticCredentials,
		HTTPClient:  s.httpClient,
	}
}

// KinesisClient returns a client for kinesis-local. optFns apply last, e.g.
// to wrap HTTPClient.
func (s *Servers) KinesisClient(optFns ...func(*kinesis.Options)) *kinesis.Client {
	return kinesisClient(s.AWSConfig(), s.KinesisEndpoint, optFns...)
}

// KinesaliteClient returns a client for kinesalite. It panics unless Start
// was given Options.Kinesalite: an empty endpoint would send the requests to
// AWS itself.
func (s *Servers) KinesaliteClient(optFns ...func(*kinesis.Options)) *kinesis.Client {
	if s.KinesaliteEndpoint == "" {
		panic("localaws: KinesaliteClient needs Options.Kinesalite")
	}
	return kinesisClient(s.AWSConfig(), s.KinesaliteEndpoint, optFns...)
}

// DynamoDBClient returns a client for dynalite.
func (s *Servers) DynamoDBClient(optFns ...func(*dynamodb.Options)) *dynamodb.Client {
	cfg := s.AWSConfig()
	cfg.BaseEndpoint = aws.String(s.DynamoDBEndpoint)
	return dynamodb.NewFromConfig(cfg, optFns...)
}

func kinesisClient(cfg aws.Config, endpoint string, optFns ...func(*kinesis.Options)) *kinesis.Client {
	cfg.BaseEndpoint = aws.String(endpoint)
	return kinesis.NewFromConfig(cfg, optFns...)
}

var staticCredentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: AccessKeyID, SecretAccessKey: SecretAccessKey, Source: "localaws"}, nil
})

// newHTTPClient returns a plain *http.Client rather than an SDK BuildableClient:
// the SDK clones a BuildableClient (and its connection pool) per service
// client, and those pools could not be closed on Stop.
func newHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// kinesis-local answers HTTP/2 in ~48 ms per request, HTTP/1.1 in 2-4 ms.
	tr.ForceAttemptHTTP2 = false
	// Tests put from many goroutines; the default of 2 idle conns per host
	// would make most requests dial anew.
	tr.MaxIdleConnsPerHost = 64
	return &http.Client{Transport: tr}
}

// Probes leave retrying to waitReady, whose loop also notices a dead process.

// probeKinesis succeeds once a Kinesis emulator answers ListStreams.
func (s *Servers) probeKinesis(endpoint string) func(context.Context) error {
	c := kinesisClient(s.AWSConfig(), endpoint, func(o *kinesis.Options) { o.Retryer = aws.NopRetryer{} })
	return func(ctx context.Context) error {
		_, err := c.ListStreams(ctx, &kinesis.ListStreamsInput{})
		return err
	}
}

// probeDynamoDB succeeds once dynalite answers ListTables.
func (s *Servers) probeDynamoDB() func(context.Context) error {
	c := s.DynamoDBClient(func(o *dynamodb.Options) { o.Retryer = aws.NopRetryer{} })
	return func(ctx context.Context) error {
		_, err := c.ListTables(ctx, &dynamodb.ListTablesInput{})
		return err
	}
}
