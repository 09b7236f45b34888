#!/usr/bin/env bash
# Generates the mobile client stubs from protos/ and checks them (`make clients`).
#
#   Android  clients/android/generated/java   Java lite messages (protoc --java_out=lite)
#                                             + gRPC stubs (protoc-gen-grpc-java, lite),
#                                             then compiled with Maven against grpc-stub,
#                                             grpc-protobuf-lite and protobuf-javalite
#   iOS      clients/ios/generated/objc       Objective-C messages (protoc --objc_out),
#                                             checked for one .h/.m pair per proto
#            clients/ios/generated/swift      Swift messages and gRPC stubs, only where
#                                             protoc-gen-swift (and protoc-gen-grpc-swift-2)
#                                             are on PATH; otherwise the iOS app generates
#                                             them with SwiftPM plugins (clients/README.md)
#
# Every output directory is deleted and written anew, so a re-run gives the same result
# and a removed proto leaves nothing behind. protoc and protoc-gen-grpc-java come from
# Maven Central (versions in clients/android/pom.xml), like the runtime jars.
# Needs: Java 8+ (javac), Maven.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ANDROID=clients/android
TOOLS=$ANDROID/generated/tools
JAVA_OUT=$ANDROID/generated/java
IOS_OUT=clients/ios/generated
MVN=(mvn -q -B -Dstyle.color=never -f "$ANDROID/pom.xml")

die() { echo "clients: $*" >&2; exit 1; }
step() { echo "clients: $*"; }

command -v mvn >/dev/null 2>&1 || die "Maven (mvn) is needed to fetch protoc, protoc-gen-grpc-java and the Java runtime jars"
command -v javac >/dev/null 2>&1 || die "a JDK (javac) is needed to compile-check the Android stubs"

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) classifier=linux-x86_64 ;;
  Linux-aarch64) classifier=linux-aarch_64 ;;
  Darwin-x86_64) classifier=osx-x86_64 ;;
  Darwin-arm64) classifier=osx-aarch_64 ;;
  *) die "no protoc build on Maven Central for $(uname -s) $(uname -m)" ;;
esac

mapfile -t PROTOS < <(cd protos && find smsgw -name '*.proto' | sort)
((${#PROTOS[@]})) || die "no .proto files under protos/"

# --- generators ------------------------------------------------------------------------
step "fetching protoc and protoc-gen-grpc-java ($classifier) with Maven"
"${MVN[@]}" -Dos.classifier="$classifier" dependency:copy@codegen-tools dependency:unpack@codegen-include \
  || die "Maven could not fetch the generators (see above); the versions are in $ANDROID/pom.xml"
chmod +x "$TOOLS/protoc" "$TOOLS/protoc-gen-grpc-java"
step "$("$TOOLS/protoc" --version); protoc-gen-grpc-java from the version in $ANDROID/pom.xml"

protoc_in_protos() {  # protoc, run from protos/ so generated paths follow the package folders
  (cd protos && "../$TOOLS/protoc" -I. "-I../$TOOLS/include" "$@" "${PROTOS[@]}")
}

# --- Android -----------------------------------------------------------------------------
step "Android: Java lite messages and gRPC stubs -> $JAVA_OUT"
rm -rf "$JAVA_OUT" && mkdir -p "$JAVA_OUT"
protoc_in_protos --plugin="protoc-gen-grpc-java=../$TOOLS/protoc-gen-grpc-java" \
  --java_out=lite:"../$JAVA_OUT" --grpc-java_out=lite:"../$JAVA_OUT" \
  || die "protoc failed on the Java/gRPC Java generation (see above)"
java_files=$(find "$JAVA_OUT" -name '*.java' | wc -l)
[[ -f $JAVA_OUT/io/smsgw/v1/MessagingServiceGrpc.java ]] || die "no MessagingServiceGrpc.java was generated"

step "Android: compiling $java_files Java files against grpc-stub, grpc-protobuf-lite, protobuf-javalite"
"${MVN[@]}" compile || die "the generated Android stubs do not compile (see above)"

# --- iOS ---------------------------------------------------------------------------------
step "iOS: Objective-C messages -> $IOS_OUT/objc"
rm -rf "$IOS_OUT/objc" && mkdir -p "$IOS_OUT/objc"
protoc_in_protos --objc_out="../$IOS_OUT/objc" || die "protoc failed on the Objective-C generation (see above)"
for proto in "${PROTOS[@]}"; do
  # smsgw/v1/messaging_service.proto -> smsgw/v1/MessagingService.pbobjc.{h,m}
  base=$(basename "$proto" .proto | sed -E 's/(^|_)([a-z])/\U\2/g')
  for ext in h m; do
    [[ -s $IOS_OUT/objc/$(dirname "$proto")/$base.pbobjc.$ext ]] \
      || die "no Objective-C output $(dirname "$proto")/$base.pbobjc.$ext for $proto"
  done
done
grep -q '@interface SGWMessage ' "$IOS_OUT/objc/smsgw/v1/Message.pbobjc.h" \
  || die "Objective-C messages lack the SGW class prefix (option objc_class_prefix)"

rm -rf "$IOS_OUT/swift"
if command -v protoc-gen-swift >/dev/null 2>&1; then
  step "iOS: Swift messages -> $IOS_OUT/swift (protoc-gen-swift found on PATH)"
  mkdir -p "$IOS_OUT/swift"
  swift_grpc=()
  if command -v protoc-gen-grpc-swift-2 >/dev/null 2>&1; then
    swift_grpc=(--plugin=protoc-gen-grpc-swift="$(command -v protoc-gen-grpc-swift-2)"
                --grpc-swift_opt=Visibility=Public,Server=false --grpc-swift_out="../$IOS_OUT/swift")
  fi
  protoc_in_protos --swift_opt=Visibility=Public --swift_out="../$IOS_OUT/swift" "${swift_grpc[@]}" \
    || die "protoc failed on the Swift generation (see above)"
else
  step "iOS: no protoc-gen-swift on PATH; the app generates Swift stubs with SwiftPM plugins (clients/README.md)"
fi

step "done: $java_files Java files compiled; $(find "$IOS_OUT" -name '*.pbobjc.*' | wc -l) Objective-C files"
