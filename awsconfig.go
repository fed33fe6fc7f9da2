package kinesis

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"

	awsauth "github.com/dapr/components-contrib/common/aws/auth"
)

// newAWSConfig is components-contrib's common/aws NewConfig: the endpoint, the region and the
// credentials of Dapr's AWS authentication profile (static keys, assume role, x509), else the SDK's
// default chain. It is repeated here because that package also holds upstream's KCL worker setup,
// and importing it would keep vmware-go-kcl-v2 in every build of this binding.
func newAWSConfig(ctx context.Context, opts awsauth.Options) (aws.Config, error) {
	var load []func(*config.LoadOptions) error
	if opts.Endpoint != "" {
		load = append(load, config.WithBaseEndpoint(opts.Endpoint))
	}
	if opts.Region != "" {
		load = append(load, config.WithRegion(opts.Region))
	}
	provider, err := awsauth.NewCredentialProvider(ctx, opts, load)
	if err != nil {
		return aws.Config{}, err
	}
	if provider.Type() != awsauth.ProviderTypeUnknown {
		load = append(load, config.WithCredentialsProvider(aws.NewCredentialsCache(provider)))
	}
	return config.LoadDefaultConfig(ctx, load...)
}
